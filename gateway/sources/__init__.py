"""Where readings enter the gateway."""
