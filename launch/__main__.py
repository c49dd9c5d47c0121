"""``python -m launch``: the same as the ``distgrad-launch`` command."""
import sys

from launch.entry import main

sys.exit(main())
