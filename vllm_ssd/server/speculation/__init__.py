"""The speculation room of the draft server: what to draft and when. The speculation cache
and its builder, the policy (estimates, the build plan, the backup), each step's plan (the
on/off ``switch``, the ``route``, ``plan_choice``), the two ``modes``, the n-gram backup and
the prefill pacer. It uses the rooms below it (``kv``, ``device``, ``model``) and the request
table; the step engine above it runs a round with it."""
