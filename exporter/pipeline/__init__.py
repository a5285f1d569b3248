"""The pipeline as stages: planning → export (with bisection) → verification → finishing.

Each stage is a module that takes a chunk in one state and leaves it in the next; `runner` wires them for
one batch pass. The package knows only ports and models (DESIGN.md): the composition root builds it.
"""

from exporter.pipeline.lanes import SingleRegion
from exporter.pipeline.options import PipelineOptions
from exporter.pipeline.planning import new_batch_info, record_plan
from exporter.pipeline.runner import Pipeline
from exporter.ports import BatchResult

__all__ = [
    "BatchResult",
    "Pipeline",
    "PipelineOptions",
    "SingleRegion",
    "new_batch_info",
    "record_plan",
]
