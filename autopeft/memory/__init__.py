"""Peak training memory of a plan before it is trained (an analytic model of one step), and the
measurement that checks it.
"""
