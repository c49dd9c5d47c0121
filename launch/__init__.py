"""The launcher: turns one TOML config into an mpiexec job or an in-process debug run."""
