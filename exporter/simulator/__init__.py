"""A DLI simulator for development, the demo campaign, tests and benchmarks.

It speaks DLI's Flink job export, listing, job detail and import APIs (imports fill target projects that
start empty), checks AK/SK signatures, writes real ZIPs into an S3 server and injects faults (throttling,
5xx, resets, malformed bodies, late or missing ZIPs, lost import answers).
"""

from exporter.simulator.app import SimulatorHandle, create_app, running_simulator, serve_simulator
from exporter.simulator.faults import FaultKnobs
from exporter.simulator.settings import SimulatorSettings, load_simulator_settings

__all__ = [
    "FaultKnobs",
    "SimulatorHandle",
    "SimulatorSettings",
    "create_app",
    "load_simulator_settings",
    "running_simulator",
    "serve_simulator",
]
