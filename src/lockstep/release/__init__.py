"""Cross-repository releases: tag each component, wait for its artifact, pin it downstream."""
