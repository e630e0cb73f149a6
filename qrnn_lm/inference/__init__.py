"""Using a trained model: exact perplexity over a split (``evaluate``) and sampling (``generate``)."""
