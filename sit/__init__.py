"""sit: Scalable Interpolant Transformers (Ma et al., 2024).

Layout (imports point one way, top to bottom):
  timegrid, paths, objectives, diffusion_coef, guidance, samplers, discrete, likelihood   (math core)
  models                                                                                   (network)
  vae, data, dist, train, evaluate, cli                                                    (programs)
"""

__version__ = "0.1.0"
