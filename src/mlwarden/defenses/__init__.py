"""Defences: training strategies, detectors, output hardening."""
