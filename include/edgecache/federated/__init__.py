"""Federated learning across edges: each edge trains on its own logs and shares only a
fixed-size model update and its sample count.

``model``   the shared model: a LinearModel as one parameter vector, and an ``Update``;
``client``  an edge's local training on its own rows (one Spark task per edge);
``server``  aggregation (FedAvg, DP-FedAvg) and the rounds;
``secagg``  secure aggregation with pairwise additive masks, so the server learns only the sum.
"""
