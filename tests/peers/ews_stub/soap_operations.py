"""The EWS operations the stub answers, written from Microsoft's published schema
(messages.xsd / types.xsd): GetFolder, FindFolder, FindItem (IndexedPageItemView
paging), GetItem (MimeContent), UpdateItem (IsRead), MoveItem, DeleteItem, ResolveNames.

Only what the fetcher sends is understood; anything else is answered with a SOAP
fault naming the operation, so a test fails loudly instead of passing on a guess.
Every operation checks that the caller may open the mailbox it touches (own mailbox,
or delegate access granted in the :class:`StubExchange`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from .mail_store import StubExchange, StubFolder, StubItem, StubMailbox, StubUser, mailbox_of, new_id

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NSMAP = {"s": SOAP, "m": M, "t": T}


def m(tag: str) -> str:
    return f"{{{M}}}{tag}"


def t(tag: str) -> str:
    return f"{{{T}}}{tag}"


def xs_boolean(text: str | None) -> bool:
    """XML Schema's boolean: true, false, 1 or 0 (exchangelib sends 1 and 0)."""
    value = (text or "").strip()
    if value not in ("true", "false", "1", "0"):
        raise SoapFault(f"{text!r} is not an xs:boolean")
    return value in ("true", "1")


class SoapFault(Exception):
    """Answered as a SOAP Fault (HTTP 500), as Exchange does for malformed or unknown requests."""


@dataclass
class CallRecord:
    """What one request looked like, for tests to assert on."""

    operation: str
    user: str
    auth_scheme: str
    anchor_mailbox: str | None
    impersonated: str | None
    mailboxes: set[str] = field(default_factory=set)
    """Every mailbox address the request addressed (by Mailbox element or by id)."""
    paging: tuple[int, int] | None = None
    """FindItem: (Offset, MaxEntriesReturned) of its IndexedPageItemView."""


@dataclass
class Call:
    exchange: StubExchange
    user: StubUser
    record: CallRecord


class AccessDenied(Exception):
    pass


class NotFound(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


def _open_mailbox(call: Call, address: str) -> StubMailbox:
    call.record.mailboxes.add(address.lower())
    mailbox = call.exchange.mailbox(address)
    if mailbox is None:
        raise NotFound("ErrorNonExistentMailbox", f"No mailbox with such guid or address: {address}")
    if not call.exchange.may_open(call.user, address):
        raise AccessDenied()
    return mailbox


def _folder_from(call: Call, element: etree._Element) -> tuple[StubMailbox, StubFolder]:
    """A FolderId or DistinguishedFolderId element to its folder, access checked."""
    if element.tag == t("DistinguishedFolderId"):
        address = element.findtext(f"{t('Mailbox')}/{t('EmailAddress')}") or call.user.mailbox
        mailbox = _open_mailbox(call, address)
        folder = mailbox.distinguished(element.get("Id"))
        if folder is None:
            raise NotFound("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        return mailbox, folder
    if element.tag == t("FolderId"):
        address = mailbox_of(element.get("Id", ""))
        if address is None:
            raise NotFound("ErrorInvalidIdMalformed", "Id is malformed.")
        mailbox = _open_mailbox(call, address)
        folder = mailbox.folders.get(element.get("Id"))
        if folder is None:
            raise NotFound("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        return mailbox, folder
    raise SoapFault(f"unexpected folder id element {element.tag}")


def _item_from(call: Call, element: etree._Element) -> tuple[StubMailbox, StubFolder, StubItem]:
    address = mailbox_of(element.get("Id", ""))
    if address is None:
        raise NotFound("ErrorInvalidIdMalformed", "Id is malformed.")
    mailbox = _open_mailbox(call, address)
    found = mailbox.find_item(element.get("Id"))
    if found is None:
        raise NotFound("ErrorItemNotFound", "The specified object was not found in the store.")
    return mailbox, *found


def _response_message(operation: str, children: list[etree._Element] = (), code: str = "NoError", text: str | None = None, response_class: str | None = None) -> etree._Element:
    message = etree.Element(m(f"{operation}ResponseMessage"))
    message.set("ResponseClass", response_class or ("Success" if code == "NoError" else "Error"))
    if text:
        etree.SubElement(message, m("MessageText")).text = text
    etree.SubElement(message, m("ResponseCode")).text = code
    if code != "NoError":
        etree.SubElement(message, m("DescriptiveLinkKey")).text = "0"
    message.extend(children)
    return message


def _per_id(operation: str, call: Call, elements: list[etree._Element], answer: Callable[[etree._Element], list[etree._Element]]) -> list[etree._Element]:
    """One response message per requested id, errors included, in request order (as EWS does)."""
    messages = []
    for element in elements:
        try:
            messages.append(_response_message(operation, answer(element)))
        except AccessDenied:
            messages.append(_response_message(operation, code="ErrorAccessDenied", text="Access is denied. Check credentials and try again."))
        except NotFound as exc:
            messages.append(_response_message(operation, code=exc.code, text=str(exc)))
    return messages


def _folder_element(mailbox: StubMailbox, folder: StubFolder) -> etree._Element:
    element = etree.Element(t("Folder"))
    etree.SubElement(element, t("FolderId"), Id=folder.folder_id, ChangeKey=folder.change_key)
    if folder.parent_id:
        etree.SubElement(element, t("ParentFolderId"), Id=folder.parent_id, ChangeKey="AQAAAA")
    etree.SubElement(element, t("FolderClass")).text = "IPF.Note"
    etree.SubElement(element, t("DisplayName")).text = folder.name
    etree.SubElement(element, t("TotalCount")).text = str(len(folder.items))
    etree.SubElement(element, t("ChildFolderCount")).text = str(len(mailbox.children(folder.folder_id)))
    etree.SubElement(element, t("UnreadCount")).text = str(sum(not i.is_read for i in folder.items.values()))
    return element


def _item_id(item: StubItem) -> etree._Element:
    element = etree.Element(t("ItemId"))
    element.set("Id", item.item_id)
    element.set("ChangeKey", item.change_key)
    return element


def _requested_fields(shape: etree._Element | None) -> set[str]:
    if shape is None:
        return set()
    return {uri.get("FieldURI") for uri in shape.iter(t("FieldURI"))}


def _message_element(item: StubItem, fields: set[str]) -> etree._Element:
    element = etree.Element(t("Message"))
    if "item:MimeContent" in fields:
        mime = etree.SubElement(element, t("MimeContent"), CharacterSet="UTF-8")
        mime.text = base64.b64encode(item.mime).decode("ascii")
    element.append(_item_id(item))
    if "item:DateTimeReceived" in fields:
        etree.SubElement(element, t("DateTimeReceived")).text = item.received.strftime("%Y-%m-%dT%H:%M:%SZ")
    if "message:IsRead" in fields:
        etree.SubElement(element, t("IsRead")).text = "true" if item.is_read else "false"
    return element


def _paged(request: etree._Element, view_tag: str, total: int) -> tuple[int, int]:
    """(offset, how many) of an Indexed page view; BasePoint End counts from the end."""
    view = request.find(m(view_tag))
    if view is None:
        return 0, total
    offset = int(view.get("Offset", "0"))
    limit = int(view.get("MaxEntriesReturned", str(total)))
    if view.get("BasePoint", "Beginning") == "End":
        offset = max(total - offset - limit, 0)
    return offset, limit


# --- operations -----------------------------------------------------------------------


def get_folder(call: Call, request: etree._Element) -> list[etree._Element]:
    def answer(element: etree._Element) -> list[etree._Element]:
        mailbox, folder = _folder_from(call, element)
        folders = etree.Element(m("Folders"))
        folders.append(_folder_element(mailbox, folder))
        return [folders]

    return _per_id("GetFolder", call, list(request.find(m("FolderIds"))), answer)


def find_folder(call: Call, request: etree._Element) -> list[etree._Element]:
    if request.get("Traversal") != "Shallow":
        raise SoapFault("the stub answers FindFolder with Traversal=Shallow only")
    wanted = None
    restriction = request.find(m("Restriction"))
    if restriction is not None:
        equal = restriction.find(t("IsEqualTo"))
        if equal is None or equal.find(t("FieldURI")).get("FieldURI") != "folder:DisplayName":
            raise SoapFault("the stub's FindFolder restricts by folder:DisplayName IsEqualTo only")
        wanted = equal.find(f"{t('FieldURIOrConstant')}/{t('Constant')}").get("Value")

    def answer(element: etree._Element) -> list[etree._Element]:
        mailbox, parent = _folder_from(call, element)
        children = [c for c in mailbox.children(parent.folder_id) if wanted is None or c.name.lower() == wanted.lower()]
        offset, limit = _paged(request, "IndexedPageFolderView", len(children))
        page = children[offset : offset + limit]
        root = etree.Element(m("RootFolder"))
        root.set("IndexedPagingOffset", str(offset + len(page)))
        root.set("TotalItemsInView", str(len(children)))
        root.set("IncludesLastItemInRange", "true" if offset + len(page) >= len(children) else "false")
        folders = etree.SubElement(root, t("Folders"))
        folders.extend(_folder_element(mailbox, c) for c in page)
        return [root]

    return _per_id("FindFolder", call, list(request.find(m("ParentFolderIds"))), answer)


def find_item(call: Call, request: etree._Element) -> list[etree._Element]:
    if request.get("Traversal") != "Shallow":
        raise SoapFault("the stub answers FindItem with Traversal=Shallow only")
    if request.find(m("Restriction")) is not None or request.find(m("QueryString")) is not None:
        raise SoapFault("the stub's FindItem has no restrictions")
    fields = _requested_fields(request.find(m("ItemShape")))
    orders = request.findall(f"{m('SortOrder')}/{t('FieldOrder')}")

    def answer(element: etree._Element) -> list[etree._Element]:
        _, folder = _folder_from(call, element)
        items = list(folder.items.values())
        for order in reversed(orders):
            uri = order.find(t("FieldURI")).get("FieldURI")
            if uri != "item:DateTimeReceived":
                raise SoapFault(f"the stub sorts by item:DateTimeReceived only, not {uri}")
            items.sort(key=lambda i: i.received, reverse=order.get("Order") == "Descending")
        offset, limit = _paged(request, "IndexedPageItemView", len(items))
        call.record.paging = (offset, limit)
        page = items[offset : offset + limit]
        root = etree.Element(m("RootFolder"))
        root.set("IndexedPagingOffset", str(offset + len(page)))
        root.set("TotalItemsInView", str(len(items)))
        root.set("IncludesLastItemInRange", "true" if offset + len(page) >= len(items) else "false")
        container = etree.SubElement(root, t("Items"))
        container.extend(_message_element(i, fields) for i in page)
        return [root]

    return _per_id("FindItem", call, list(request.find(m("ParentFolderIds"))), answer)


def get_item(call: Call, request: etree._Element) -> list[etree._Element]:
    fields = _requested_fields(request.find(m("ItemShape")))

    def answer(element: etree._Element) -> list[etree._Element]:
        _, _, item = _item_from(call, element)
        items = etree.Element(m("Items"))
        items.append(_message_element(item, fields))
        return [items]

    return _per_id("GetItem", call, list(request.find(m("ItemIds"))), answer)


def update_item(call: Call, request: etree._Element) -> list[etree._Element]:
    def answer(change: etree._Element) -> list[etree._Element]:
        _, _, item = _item_from(call, change.find(t("ItemId")))
        if request.get("ConflictResolution") == "NeverOverwrite" and change.find(t("ItemId")).get("ChangeKey") != item.change_key:
            raise NotFound("ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.")
        for update in change.find(t("Updates")):
            uri = update.find(t("FieldURI"))
            if update.tag != t("SetItemField") or uri is None or uri.get("FieldURI") != "message:IsRead":
                raise SoapFault("the stub's UpdateItem sets message:IsRead only")
            item.is_read = xs_boolean(update.findtext(f"{t('Message')}/{t('IsRead')}"))
        item.version += 1
        items = etree.Element(m("Items"))
        message = etree.SubElement(items, t("Message"))
        message.append(_item_id(item))
        conflicts = etree.Element(m("ConflictResults"))
        etree.SubElement(conflicts, t("Count")).text = "0"
        return [items, conflicts]

    return _per_id("UpdateItem", call, list(request.find(m("ItemChanges"))), answer)


def move_item(call: Call, request: etree._Element) -> list[etree._Element]:
    target_mailbox, target = _folder_from(call, request.find(m("ToFolderId"))[0])

    def answer(element: etree._Element) -> list[etree._Element]:
        mailbox, folder, item = _item_from(call, element)
        if mailbox is not target_mailbox:
            raise SoapFault("the stub moves within one mailbox only")
        del folder.items[item.item_id]
        item.item_id = new_id(mailbox.address, "I")  # a moved item gets a new id, as in Exchange
        item.version += 1
        target.items[item.item_id] = item
        items = etree.Element(m("Items"))
        message = etree.SubElement(items, t("Message"))
        message.append(_item_id(item))
        return [items]

    return _per_id("MoveItem", call, list(request.find(m("ItemIds"))), answer)


def delete_item(call: Call, request: etree._Element) -> list[etree._Element]:
    delete_type = request.get("DeleteType")

    def answer(element: etree._Element) -> list[etree._Element]:
        mailbox, folder, item = _item_from(call, element)
        del folder.items[item.item_id]
        if delete_type == "MoveToDeletedItems":
            mailbox.distinguished("deleteditems").items[item.item_id] = item
        elif delete_type == "SoftDelete":
            mailbox.soft_deleted.append(item)
        elif delete_type != "HardDelete":
            raise SoapFault(f"unknown DeleteType {delete_type}")
        return []

    return _per_id("DeleteItem", call, list(request.find(m("ItemIds"))), answer)


def resolve_names(call: Call, request: etree._Element) -> list[etree._Element]:
    entry = request.findtext(m("UnresolvedEntry")) or ""
    found = call.exchange.resolve(entry)
    if not found:
        return [_response_message("ResolveNames", code="ErrorNameResolutionNoResults", text="No results were found.")]
    resolution_set = etree.Element(m("ResolutionSet"))
    resolution_set.set("TotalItemsInView", str(len(found)))
    resolution_set.set("IncludesLastItemInRange", "true")
    for mailbox in found:
        resolution = etree.SubElement(resolution_set, t("Resolution"))
        element = etree.SubElement(resolution, t("Mailbox"))
        etree.SubElement(element, t("Name")).text = mailbox.display_name
        etree.SubElement(element, t("EmailAddress")).text = mailbox.address
        etree.SubElement(element, t("RoutingType")).text = "SMTP"
        etree.SubElement(element, t("MailboxType")).text = "Mailbox"
    if len(found) > 1:
        return [
            _response_message(
                "ResolveNames",
                [resolution_set],
                code="ErrorNameResolutionMultipleResults",
                text="Multiple results were found.",
                response_class="Warning",
            )
        ]
    return [_response_message("ResolveNames", [resolution_set])]


OPERATIONS: dict[str, Callable[[Call, etree._Element], list[etree._Element]]] = {
    "GetFolder": get_folder,
    "FindFolder": find_folder,
    "FindItem": find_item,
    "GetItem": get_item,
    "UpdateItem": update_item,
    "MoveItem": move_item,
    "DeleteItem": delete_item,
    "ResolveNames": resolve_names,
}


def operation_of(envelope: etree._Element) -> tuple[str, etree._Element]:
    body = envelope.find(f"{{{SOAP}}}Body")
    if body is None or len(body) == 0:
        raise SoapFault("no SOAP Body")
    request = body[0]
    name = etree.QName(request).localname
    return name, request


def impersonated_address(envelope: etree._Element) -> str | None:
    header = envelope.find(f"{{{SOAP}}}Header")
    if header is None:
        return None
    impersonation = header.find(t("ExchangeImpersonation"))
    if impersonation is None:
        return None
    return next((e.text for e in impersonation.iter() if etree.QName(e).localname in ("PrimarySmtpAddress", "SmtpAddress")), None)


def answer(call: Call, operation: str, request: etree._Element) -> bytes:
    """The SOAP response envelope for ``request``; raises SoapFault for what the stub does not do."""
    if operation not in OPERATIONS:
        raise SoapFault(f"the EWS stub does not implement {operation}")
    if call.record.impersonated:
        # The fetcher uses delegate access; a request with ExchangeImpersonation is refused as a
        # real server refuses an account without the ApplicationImpersonation role.
        messages = [_response_message(operation, code="ErrorImpersonateUserDenied", text="The account does not have permission to impersonate the requested user.")]
    else:
        messages = OPERATIONS[operation](call, request)
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap=NSMAP)
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    version = etree.SubElement(header, t("ServerVersionInfo"))
    for name, value in (("MajorVersion", "15"), ("MinorVersion", "1"), ("MajorBuildNumber", "2507"), ("MinorBuildNumber", "6"), ("Version", "V2017_07_11")):
        version.set(name, value)
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    response = etree.SubElement(body, m(f"{operation}Response"))
    container = etree.SubElement(response, m("ResponseMessages"))
    container.extend(messages)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def fault(text: str) -> bytes:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap=NSMAP)
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    element = etree.SubElement(body, f"{{{SOAP}}}Fault")
    etree.SubElement(element, "faultcode").text = "a:ErrorInvalidRequest"
    etree.SubElement(element, "faultstring").text = text
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
