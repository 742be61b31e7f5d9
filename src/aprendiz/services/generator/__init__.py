"""Hosted text generators: one ray.serve.llm LLMServer deployment per configured model."""
