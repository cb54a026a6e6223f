"""Notifications (worker/notify/): low-balance crossings, configuration, delivery."""
