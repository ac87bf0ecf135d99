"""Image guardrails: detectors for PII, prompt injection, faces and unsafe (NSFW) content over images and text.

Self-contained so that one pipeline stage can call :func:`router.guardrails.stage.run_guardrails`
with the request's images, text parts and the settings :func:`router.guardrails.config.resolve`
picks for the request.
"""
