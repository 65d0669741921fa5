"""What the demo company says, in English and Swedish: offices, rooms and page texts.

Tallgrove Workspaces AB is fictional, and so are its addresses, prices and policy texts.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("en", "sv")


@dataclass(frozen=True)
class Room:
    slug: str
    name: dict[str, str]
    seats: int
    price_sek: int  # per day, excluding VAT


@dataclass(frozen=True)
class Office:
    slug: str
    city: dict[str, str]
    name: str
    address: str
    blurb: dict[str, str]
    rooms: tuple[Room, ...]


ROOMS = {
    "desk": Room("desk", {"en": "Day desk", "sv": "Dagsplats"}, 1, 350),
    "focus": Room("focus", {"en": "Focus room", "sv": "Fokusrum"}, 2, 900),
    "meeting": Room("meeting", {"en": "Meeting room", "sv": "Mötesrum"}, 8, 2400),
    "board": Room("board", {"en": "Board room", "sv": "Styrelserum"}, 14, 4800),
    "office": Room("office", {"en": "Private office", "sv": "Eget kontor"}, 4, 3100),
}

OFFICES: tuple[Office, ...] = (
    Office(
        "stockholm",
        {"en": "Stockholm", "sv": "Stockholm"},
        "Tallgrove Norrmalm",
        "Fiktiva gatan 12, 111 00 Stockholm",
        {
            "en": "Five floors above a quiet courtyard, ten minutes' walk from the central station.",
            "sv": "Fem våningar runt en lugn innergård, tio minuters promenad från centralstationen.",
        },
        (ROOMS["desk"], ROOMS["focus"], ROOMS["meeting"], ROOMS["board"], ROOMS["office"]),
    ),
    Office(
        "gothenburg",
        {"en": "Gothenburg", "sv": "Göteborg"},
        "Tallgrove Kajen",
        "Påhittade kajen 3, 411 00 Göteborg",
        {
            "en": "A converted warehouse by the river with a roof terrace for summer meetings.",
            "sv": "Ett ombyggt magasin vid älven med en takterrass för sommarmöten.",
        },
        (ROOMS["desk"], ROOMS["meeting"], ROOMS["office"]),
    ),
    Office(
        "malmo",
        {"en": "Malmö", "sv": "Malmö"},
        "Tallgrove Hamnen",
        "Exempelvägen 7, 211 00 Malmö",
        {
            "en": "Sea views, bicycle parking for everyone and a train to Copenhagen around the corner.",
            "sv": "Havsutsikt, cykelparkering för alla och tåget till Köpenhamn runt hörnet.",
        },
        (ROOMS["desk"], ROOMS["focus"], ROOMS["meeting"]),
    ),
    Office(
        "uppsala",
        {"en": "Uppsala", "sv": "Uppsala"},
        "Tallgrove Ån",
        "Låtsasgränd 1, 753 00 Uppsala",
        {
            "en": "Small and calm, near the university: ideal for research teams and workshops.",
            "sv": "Litet och lugnt, nära universitetet: perfekt för forskargrupper och workshoppar.",
        },
        (ROOMS["desk"], ROOMS["focus"], ROOMS["board"]),
    ),
)
OFFICES_BY_SLUG = {o.slug: o for o in OFFICES}

# Page texts. The privacy policy is written for this demo; it is not legal advice.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "site_name": "Tallgrove Workspaces",
        "tagline": "Offices, desks and meeting rooms by the day, in four Swedish cities.",
        "nav_home": "Offices",
        "nav_book": "Book a room",
        "nav_privacy": "Privacy",
        "other_language": "Svenska",
        "our_offices": "Our offices",
        "rooms_from": "Rooms from {price} SEK a day",
        "see_office": "See the office",
        "map_title": "Map of {place}",
        "chat_title": "Chat with our booking team",
        "newsletter_title": "Ten per cent off your first meeting",
        "newsletter_text": (
            "Subscribe to our monthly letter and get ten per cent off your first meeting room."
        ),
        "newsletter_email": "E-mail address",
        "newsletter_submit": "Subscribe",
        "newsletter_thanks": "Thank you: the first letter arrives next month.",
        "rooms": "Rooms",
        "seats": "{n} seats",
        "per_day": "{price} SEK a day",
        "book_this": "Book here",
        "book_title": "Book a room",
        "book_intro": "Choose an office, a room and a day. You pay at the reception on arrival.",
        "office": "Office",
        "room": "Room",
        "date": "Date",
        "name": "Your name",
        "company": "Company (optional)",
        "continue": "Continue to checkout",
        "checkout_title": "Check your booking",
        "checkout_empty": "Your booking has expired or was never started.",
        "start_over": "Start a booking",
        "confirm": "Confirm booking",
        "done_title": "Booking confirmed",
        "done_text": "Your reference is {ref}. See you at {office}!",
        "invalid": "Please fill in every required field.",
        "privacy_title": "Privacy policy",
        "footer_controller": (
            "Tallgrove Workspaces AB is the controller of the personal data processed on this site."
        ),
        "do_not_sell": "Do Not Sell or Share My Personal Information",
        "open_settings": "Open cookie settings",
        "analytics_hits": "Visits counted",
    },
    "sv": {
        "site_name": "Tallgrove Workspaces",
        "tagline": "Kontor, arbetsplatser och mötesrum per dag, i fyra svenska städer.",
        "nav_home": "Kontor",
        "nav_book": "Boka ett rum",
        "nav_privacy": "Integritet",
        "other_language": "English",
        "our_offices": "Våra kontor",
        "rooms_from": "Rum från {price} kr per dag",
        "see_office": "Se kontoret",
        "map_title": "Karta över {place}",
        "chat_title": "Chatta med vårt bokningsteam",
        "newsletter_title": "Tio procent rabatt på ditt första möte",
        "newsletter_text": (
            "Prenumerera på vårt månadsbrev och få tio procent rabatt på ditt första mötesrum."
        ),
        "newsletter_email": "E-postadress",
        "newsletter_submit": "Prenumerera",
        "newsletter_thanks": "Tack: det första brevet kommer nästa månad.",
        "rooms": "Rum",
        "seats": "{n} platser",
        "per_day": "{price} kr per dag",
        "book_this": "Boka här",
        "book_title": "Boka ett rum",
        "book_intro": "Välj kontor, rum och dag. Du betalar i receptionen när du kommer.",
        "office": "Kontor",
        "room": "Rum",
        "date": "Datum",
        "name": "Ditt namn",
        "company": "Företag (valfritt)",
        "continue": "Fortsätt till kassan",
        "checkout_title": "Kontrollera din bokning",
        "checkout_empty": "Din bokning har gått ut eller påbörjades aldrig.",
        "start_over": "Påbörja en bokning",
        "confirm": "Bekräfta bokningen",
        "done_title": "Bokningen är bekräftad",
        "done_text": "Ditt referensnummer är {ref}. Välkommen till {office}!",
        "invalid": "Fyll i alla obligatoriska fält.",
        "privacy_title": "Integritetspolicy",
        "footer_controller": (
            "Tallgrove Workspaces AB är personuppgiftsansvarig för behandlingen på den här webbplatsen."
        ),
        "do_not_sell": "Do Not Sell or Share My Personal Information (Kalifornien)",
        "open_settings": "Öppna kakinställningar",
        "analytics_hits": "Räknade besök",
    },
}
