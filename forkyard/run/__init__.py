"""The run loop: the options of a run, the workflow that checks them and plans, the runner
that dispatches tasks to sandboxes, and the integrator that lands finished work."""
