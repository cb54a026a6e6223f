"""The inbox and payment-provider handlers (worker/inbox/, worker/payments/)."""
