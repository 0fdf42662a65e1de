"""The client side of refund-sorter: the ``refund-sorter`` command (:mod:`.commands`), the embedded local
stack (:mod:`.local_stack`: moto + an API Gateway stand-in) and the SAM template reader (:mod:`.template`).

None of this ships to Lambda: it needs moto, werkzeug, PyYAML and rich, which the layer does not carry.
"""
