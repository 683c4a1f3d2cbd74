"""Budgets: what the live site may feel while heavy work runs, and the controller that spends it."""
