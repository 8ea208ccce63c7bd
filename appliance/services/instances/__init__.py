"""Instances: machines on the operator's engines. The catalog (plans, images, apps), the
nodes and placement, the instance lifecycle (create, power, resize, rebuild, delete,
passwords, keys), the durable job runner and the engine jobs it runs, and backups kept by
the appliance. Only this package and its callers' engine calls talk to drivers.
"""
