"""SVD's diffusion constants (SPEC section 4), in one torch-free place: the EDM code and both config schemas read them."""

P_MEAN, P_STD = 0.7, 1.6  # training sigma ~ LogNormal(P_MEAN, P_STD)
COND_AUG_MEAN, COND_AUG_STD = -3.0, 0.5  # conditioning noise sigma_c ~ LogNormal(mean, std)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 700.0, 7.0  # SVD scheduler config for the Karras schedule
