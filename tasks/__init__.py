"""SeqIO task registrations for cost-jax (installed as the package `cost_jax_tasks`)."""
