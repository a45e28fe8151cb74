"""Hardware model: device profiles, latency prediction, memory, energy and microcontroller estimates."""
