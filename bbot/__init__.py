"""bbot: a build bot for package build farms (controller, agent, worker)."""
__version__ = "0.1.0"
