"""Federated learning under malicious clients, on Flower (extra ``federated``).

Modules, one concept each: `partition` (IID / Dirichlet splits), `attacks` (what a
malicious client does), `clients` (local training and the Flower `ClientApp`s),
`defences` (Flower's robust strategies, clipping and DP wrappers; the epsilon),
`secagg` (FedAvg under SecAgg+), `settings` (`FederatedSettings`), `simulation`
(`run_federated` through Flower's simulation engine, measured per round) and `check`
(the report and the ``federated`` audit check). Nothing here imports Flower or torch
at package import.
"""
