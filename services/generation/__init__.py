"""Generation tiers behind one contract: `Generator.generate(messages) -> Generation`."""

from services.generation.base import (
    Generation,
    GenerationError,
    GenerationTimeout,
    Generator,
    build_generator,
    resolve_model_path,
)

__all__ = ["Generation", "GenerationError", "GenerationTimeout", "Generator", "build_generator",
           "resolve_model_path"]
