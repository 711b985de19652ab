"""The shipped specs, one YAML file per autoencoder variant (a package so they install with aebench)."""
