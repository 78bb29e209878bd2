"""The real-time delivery path: the decision (``core``), the warm's state it reads
(``state``), its metrics, the edge service (``service``) and the replay driver (``replay``)."""

from edgecache.serving.delivery.core import Decision, Delivery, DeliveryError, delivery_client

__all__ = ["Decision", "Delivery", "DeliveryError", "delivery_client"]
