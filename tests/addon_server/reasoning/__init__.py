"""Tests of addon_server.reasoning (rules, risk, prompt, LLM client, supervised server)."""
