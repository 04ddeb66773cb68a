"""Memorisation checks: does G reproduce its training images? One plugin (or helper) per module, among them:

``neighbours`` (analysis ``nearest-neighbours``): each sample's exact nearest training images in pixels and in D's
features, against the same distances of held-out real images. ``data_copying`` (evaluator ``data-copying``): the
C_T test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), a per-cell Mann-Whitney test of those distances.
``dedup`` (command ``ganlab dedup``, evaluator ``hash-collisions``): the paper's autoencoder-hash dedup, with
``autoencoder`` (a helper module, no hooks) holding the 3072-128-3072 autoencoder and its hash.
"""
