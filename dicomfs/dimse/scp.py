"""Our storage SCP on ``localaddress:localport``: the destination of our C-MOVEs (PS3.4 C.4.2).

The PACS opens an association to it and sends each sub-operation as a C-STORE (PS3.4 C.4.2.3.1),
which :class:`~dicomfs.dimse.receiver.InstanceReceiver` admits, checks and stores. Every storage
class is supported with every stored transfer syntax; with ``UNRESTRICTED_STORAGE_SERVICE``
(installed by ``patches``) unknown and private classes are accepted too, in the sender's first
proposed syntax: we store bytes and never decode, and a PACS that cannot convert (dcmqrscp) must
be allowed to send what it stores.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from dicomfs.dimse.negotiation import TRANSFER_SYNTAXES
from dicomfs.dimse.patches import MAX_RECEIVE_PDU, tune_socket
from dicomfs.dimse.receiver import InstanceReceiver

LOGGER = logging.getLogger(__name__)


class StorageSCP:
    """Our C-STORE SCP on ``localaddress:localport``, the destination of our C-MOVEs.

    Parameters
    ----------
    receiver : InstanceReceiver
        The C-STORE handler.
    ae_title : str
        Our AE title (``aet``): the move destination the PACS must know.
    address, port : str, int
        Where to listen.
    timeout : float
        Seconds for ACSE, DIMSE and network waits.
    ssl_context : ssl.SSLContext or None
        DICOM over TLS.
    """

    def __init__(
        self,
        receiver: InstanceReceiver,
        ae_title: str,
        address: str,
        port: int,
        timeout: float,
        ssl_context: Any = None,
    ) -> None:
        self._receiver = receiver
        self._ae_title = ae_title
        self._address = (address, port)
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._server: Any = None

    def start(self) -> None:
        """Listen (from FUSE init()); raises OSError when the port cannot be bound."""
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = MAX_RECEIVE_PDU
        ae.acse_timeout = self._timeout
        ae.dimse_timeout = self._timeout
        ae.network_timeout = self._timeout
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), list(TRANSFER_SYNTAXES))
        # Accept any calling AE: the PACS's own title may differ from the one we call.
        ae.require_calling_aet = []
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._receiver.handle_store),
            (evt.EVT_CONN_OPEN, tune_socket),
        ]
        self._server = ae.start_server(
            self._address, block=False, evt_handlers=handlers, ssl_context=self._ssl_context
        )
        LOGGER.info("storage SCP %s listening on %s:%d", self._ae_title, *self._address)

    def stop(self) -> None:
        """Stop listening and abort the associations still storing (shutdown() only stops
        accepting): their objects would land in a partial folder that is about to go."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            for assoc in list(server.active_associations):
                assoc.abort()
