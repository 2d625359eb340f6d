"""The experiment driver: profiles, the stage cache, the pipeline, the report, the CLI."""
