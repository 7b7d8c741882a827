"""Small embedded word lists for synthetic W-2 identities (no downloads, fully deterministic)."""

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
    "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Carlos", "Karen", "Daniel", "Lisa", "Matthew", "Nancy",
    "Anthony", "Betty", "Mark", "Sandra", "Steven", "Ashley", "Andrew", "Emily",
    "Kevin", "Michelle", "Brian", "Amanda", "Wei", "Priya", "Ahmed", "Sofia",
)

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
    "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Nguyen", "Patel", "Kim", "Chen",
)

COMPANY_NAMES: tuple[str, ...] = (
    "Acme Manufacturing Inc", "Blue Ridge Logistics LLC", "Cedar Valley Health", "Summit Software Corp",
    "Riverbend Foods Co", "Northwind Traders", "Evergreen Dental Group", "Pioneer Construction LLC",
    "Harbor Point Hotels", "Granite State Insurance", "Brightline Electric", "Maple Leaf Bakery",
    "Silverlake Analytics", "Golden Gate Printing", "Prairie Wind Energy", "Lakeside Auto Repair",
    "Redwood Financial Group", "Coastal Marine Supply", "Ironworks Fabrication", "Sunrise Home Care",
    "Westfield Retail Partners", "Oakmont School District", "Keystone Legal Services", "Horizon Airlines Inc",
)

STREET_NAMES: tuple[str, ...] = (
    "Oak St", "Maple Ave", "Pine Rd", "Cedar Ln", "Elm St", "Washington Blvd", "Lake Dr", "Hill St",
    "Park Ave", "Main St", "Sunset Blvd", "River Rd", "Church St", "Highland Ave", "Mill Rd", "Forest Dr",
    "Lincoln Way", "Jefferson St", "Spring St", "Meadow Ln", "Broadway", "Walnut St", "Chestnut Ave", "Union St",
)

# (city, two-letter state, ZIP); every state appears at least twice so locality names vary per state.
CITIES: tuple[tuple[str, str, str], ...] = (
    ("Springfield", "IL", "62704"), ("Chicago", "IL", "60614"), ("Peoria", "IL", "61602"),
    ("Columbus", "OH", "43215"), ("Cleveland", "OH", "44113"), ("Dayton", "OH", "45402"),
    ("Philadelphia", "PA", "19103"), ("Pittsburgh", "PA", "15222"), ("Allentown", "PA", "18101"),
    ("Detroit", "MI", "48226"), ("Lansing", "MI", "48933"), ("Flint", "MI", "48502"),
    ("Louisville", "KY", "40202"), ("Lexington", "KY", "40507"),
    ("Kansas City", "MO", "64106"), ("St. Louis", "MO", "63101"),
    ("Baltimore", "MD", "21202"), ("Rockville", "MD", "20850"),
    ("Indianapolis", "IN", "46204"), ("Fort Wayne", "IN", "46802"),
    ("New York", "NY", "10001"), ("Yonkers", "NY", "10701"),
    ("Portland", "OR", "97204"), ("Salem", "OR", "97301"),
    ("Birmingham", "AL", "35203"), ("Gadsden", "AL", "35901"),
    ("Denver", "CO", "80202"), ("Aurora", "CO", "80012"),
)

STATES: tuple[str, ...] = tuple(sorted({state for _, state, _ in CITIES}))
