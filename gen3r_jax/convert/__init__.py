"""PyTorch -> Flax conversion: mapping tables, strict conversion with a JSON report, Orbax output."""

from gen3r_jax.convert.core import ConversionError, Report, convert, load_torch_weights, param_targets
from gen3r_jax.convert.sources import open_source
from gen3r_jax.convert.table import MappingTable, TableBuilder

__all__ = ["ConversionError", "Report", "convert", "load_torch_weights", "param_targets", "open_source",
           "MappingTable", "TableBuilder"]
