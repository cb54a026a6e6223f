"""The test suite; its folders mirror worker/, webhooks/ and tasks/."""
