"""Attacks used as stress tests: evasion, poisoning, extraction, inference."""
