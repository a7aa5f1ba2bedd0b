"""Ablation reports generated from MLflow: `mgm-studies report STUDY` (see build.py)."""
