"""Recipes: resumable pipelines of named steps; the demo is one."""
