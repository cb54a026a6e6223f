"""The HTTP app (webhooks/api/, webhooks/providers/) and its error map."""
