"""lockstep: release systems spread over many git repositories."""

__version__ = "0.1.0"
