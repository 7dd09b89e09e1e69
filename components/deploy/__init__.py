"""The deploy step: roll the serving Deployment to a new model and wait until it serves it."""
