"""Hash-triggered rollouts of `Environment` resources: the resource, its hash and conversion, the
pure reconciler, the controller and its drivers, and the managed-service promotion protocol."""
