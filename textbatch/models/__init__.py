"""Text classifiers that take textbatch's batches (``model(**batch)``). Imports nothing from
training, cli or bench."""

from textbatch.models.classifiers import BackboneClassifier, TextClassifier, load_model

__all__ = ["BackboneClassifier", "TextClassifier", "load_model"]
