"""pipeline: the streaming service (sources -> detect -> classify -> verdict -> sinks)."""
