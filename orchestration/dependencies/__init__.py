"""Dependency manifests of project repositories and what they tell about projects' packages."""
