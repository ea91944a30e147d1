"""The pipeline on Dagster (the optional ``[orchestrate]`` extra): definitions generated from the flow tables."""
