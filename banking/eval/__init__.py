"""The dialogue evaluation: scripted callers against the reference bank, scored for success, wrong facts and leaks.

`python -m banking.eval.run --llm none qwen2.5-0.5b` plays every dialogue of `dialogues.json` through
the real `Dialogue` with the real PostgreSQL and Redis, once per LLM, and prints the figures.
"""
