"""suggest-annotation: which subjects (or slices) to annotate next, and a simulated
annotation loop that shows whether the choice beats picking at random.

Public API:
    FeatureOptions                                                       (options.py)
    cohort_thumbnails, fit_latent_space, feature_table                   (features.py)
    VAE, VAEConfig, train_vae, embed                                     (vae.py)
    FeatureSource                                                        (table.py)
    rank_units, STRATEGIES                                               (strategies.py)
    suggest, parse_budget, resolve_budget                                (suggest.py)
    simulate (run.py), run_simulation, SimOptions                        (simulate.py)
"""
