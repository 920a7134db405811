"""Who runs the trials: local Optuna worker processes (``local``, ``optuna_worker``) or Ray Tune (``ray_tune``)."""
