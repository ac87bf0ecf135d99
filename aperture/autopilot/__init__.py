"""The loop's controller (``aperture autopilot``): see ``controller.Autopilot`` and docs/autopilot.md."""
