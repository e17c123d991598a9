"""The operator's kopf handlers: thin adapters between Kubernetes and the controller.

Start it with ``retune operator`` (:func:`retune.handlers.operator.run_operator`).
"""
