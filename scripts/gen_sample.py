#!/usr/bin/env python3
"""Writes the sample dataset under examples/: companies.csv, contacts.csv and
bad_lines.csv. Seeded and stdlib-only, so every run writes the same bytes:

    python3 scripts/gen_sample.py            # rewrite examples/
    python3 scripts/gen_sample.py --check    # exit 1 if examples/ differ

contacts.csv names each contact's company in `company_` columns, so importing
it alone also creates (and links) the companies. List cells (industries,
departments, ...) use both separators the importer knows: `;` and `,`.
bad_lines.csv is a small contacts file with a few rows the importer rejects
(see README, "Dirty files"), for the CLI's tests.
"""

import argparse
import csv
import io
import os
import random
import sys

SEED = 20250115
COMPANIES = 1000
CONTACTS = 3000

FIRST = """James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William
Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel
Nancy Matthew Sandra Anthony Betty Mark Ashley Donald Emily Steven Kimberly Andrew
Margaret Paul Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Melissa Timothy
Deborah Ronald Stephanie Jason Rebecca George Laura Edward Helen Jeffrey Sharon Ryan
Cynthia Jacob Kathleen Nicholas Amy Gary Angela Eric Shirley Jonathan Anna Stephen Ruth
Larry Brenda Justin Pamela Scott Nicole Brandon Katherine Benjamin Samantha Samuel
Christine Gregory Emma Alexander Catherine Patrick Debra Frank Rachel Raymond Carolyn
Jack Janet Dennis Maria Jerry Olivia Tyler Heather Aaron Priya Wei Hiroshi Sofia Lukas
Chloe Mateo Aisha Omar Ingrid Lars Anika Rafael Camila Yuki Mei Arjun Fatima Noah Zoe""".split()

LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez
Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White
Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres
Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts
Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales
Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos
Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes
Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Müller Schmidt Dubois
Rossi Tanaka Sato Chen Wang Singh Kumar Novak Larsen Jensen Silva Santos O'Brien""".split()

PREFIX = """Acme Apex Blue Bright Cedar Clear Cloud Core Crest Delta Echo Ever First
Forge Granite Harbor Helix Iron Jade Keystone Lumen Maple Meridian Nimbus North Nova Oak
Orbit Peak Pine Pioneer Prism Quantum River Sage Silver Solar Sterling Summit Swift Terra
Titan True Vertex Vista Wave Willow Zenith""".split()

SUFFIX = """Labs Systems Analytics Software Networks Health Logistics Robotics Energy
Dynamics Capital Foods Media Security Bio Works Digital Cloud Partners Solutions""".split()

FORMS = ["Inc.", "LLC", "Ltd", "GmbH", "Corp.", "", "", ""]

INDUSTRIES = """Software;SaaS;Fintech;Healthcare;Biotechnology;Logistics;E-commerce;
Manufacturing;Retail;Energy;Telecommunications;Media;Education;Insurance;Real Estate;
Cybersecurity;Automotive;Food & Beverage;Consulting;Marketing & Advertising""".replace("\n", "").split(";")

KEYWORDS = """b2b;enterprise;api;data platform;machine learning;payments;marketplace;
supply chain;compliance;mobile;open source;analytics;automation;iot;devops""".replace("\n", "").split(";")

TECH = """AWS;Google Cloud;Azure;Kubernetes;PostgreSQL;Salesforce;HubSpot;Stripe;
React;Snowflake;Rust;Go;Python;Java;Shopify;Zendesk;Slack;Segment""".replace("\n", "").split(";")

# (city, state, country, phone prefix, tld)
PLACES = [
    ("San Francisco", "CA", "USA", "+1 415", "com"),
    ("New York", "NY", "USA", "+1 212", "com"),
    ("Austin", "TX", "USA", "+1 512", "com"),
    ("Seattle", "WA", "USA", "+1 206", "com"),
    ("Boston", "MA", "USA", "+1 617", "com"),
    ("Chicago", "IL", "USA", "+1 312", "com"),
    ("Denver", "CO", "USA", "+1 303", "io"),
    ("Atlanta", "GA", "USA", "+1 404", "com"),
    ("Toronto", "ON", "Canada", "+1 416", "ca"),
    ("Vancouver", "BC", "Canada", "+1 604", "ca"),
    ("London", "England", "United Kingdom", "+44 20", "co.uk"),
    ("Manchester", "England", "United Kingdom", "+44 161", "co.uk"),
    ("Berlin", "Berlin", "Germany", "+49 30", "de"),
    ("Munich", "Bavaria", "Germany", "+49 89", "de"),
    ("Paris", "Île-de-France", "France", "+33 1", "fr"),
    ("Amsterdam", "North Holland", "Netherlands", "+31 20", "nl"),
    ("Stockholm", "Stockholm", "Sweden", "+46 8", "se"),
    ("Bangalore", "Karnataka", "India", "+91 80", "in"),
    ("Singapore", "Singapore", "Singapore", "+65 6", "sg"),
    ("Sydney", "NSW", "Australia", "+61 2", "com.au"),
    ("São Paulo", "SP", "Brazil", "+55 11", "com.br"),
    ("Tokyo", "Tokyo", "Japan", "+81 3", "jp"),
]

# (title, seniority, departments)
TITLES = [
    ("Chief Executive Officer", "c_suite", ["Executive"]),
    ("Chief Technology Officer", "c_suite", ["Engineering", "Executive"]),
    ("Chief Financial Officer", "c_suite", ["Finance", "Executive"]),
    ("VP of Sales", "vp", ["Sales"]),
    ("VP of Engineering", "vp", ["Engineering"]),
    ("VP Marketing", "vp", ["Marketing"]),
    ("Director of Operations", "director", ["Operations"]),
    ("Director, Product Management", "director", ["Product"]),
    ("Head of People", "head", ["Human Resources"]),
    ("Head of Growth", "head", ["Marketing", "Sales"]),
    ("Engineering Manager", "manager", ["Engineering"]),
    ("Account Executive", "senior", ["Sales"]),
    ("Senior Software Engineer", "senior", ["Engineering"]),
    ("Data Scientist", "senior", ["Engineering", "Data"]),
    ("Product Designer", "entry", ["Product", "Design"]),
    ("Customer Success Manager", "manager", ["Customer Success"]),
    ("Marketing Coordinator", "entry", ["Marketing"]),
    ("Financial Analyst", "entry", ["Finance"]),
    ("Recruiter", "entry", ["Human Resources"]),
    ("Solutions Architect", "senior", ["Engineering", "Sales"]),
]

COMPANY_HEADER = [
    "name", "website", "industries", "keywords", "technologies", "employees_count",
    "annual_revenue", "total_funding", "founded_year", "country", "state", "city",
    "phone", "linkedin_url",
]

CONTACT_HEADER = [
    "first_name", "last_name", "email", "title", "seniority", "departments", "phone",
    "linkedin_url", "email_status", "country", "state", "city", "company_name",
    "company_website", "company_industries", "company_employees_count",
]


def slug(text):
    out = []
    for c in text.lower():
        if c.isascii() and c.isalnum():
            out.append(c)
        elif c in "äöüéèêíóúãçå":
            out.append({"ä": "a", "ö": "o", "ü": "u", "é": "e", "è": "e", "ê": "e",
                        "í": "i", "ó": "o", "ú": "u", "ã": "a", "ç": "c", "å": "a"}[c])
    return "".join(out)


def join_list(rng, items):
    """A list cell: `;` or `, ` between items, as files in the wild have it."""
    return (";" if rng.random() < 0.5 else ", ").join(items)


def phone(rng, prefix):
    return f"{prefix} {rng.randint(200, 999)} {rng.randint(1000, 9999)}"


def companies(rng):
    seen = set()
    rows = []
    while len(rows) < COMPANIES:
        base = f"{rng.choice(PREFIX)} {rng.choice(SUFFIX)}"
        if base in seen:
            base = f"{rng.choice(PREFIX)}{rng.choice(PREFIX).lower()} {rng.choice(SUFFIX)}"
            if base in seen:
                continue
        seen.add(base)
        city, state, country, prefix, tld = rng.choice(PLACES)
        domain = f"{slug(base)}.{tld}"
        form = rng.choice(FORMS)
        name = f"{base} {form}".strip()
        employees = int(rng.lognormvariate(4.2, 1.5)) + 2
        revenue = employees * rng.randint(60, 400) * 1000
        funding = rng.choice([0, 0, rng.randint(1, 300) * 500_000])
        rows.append({
            "name": name,
            "website": rng.choice([f"https://www.{domain}", f"https://{domain}", f"http://{domain}/"]),
            "industries": join_list(rng, rng.sample(INDUSTRIES, rng.randint(1, 3))),
            "keywords": join_list(rng, rng.sample(KEYWORDS, rng.randint(0, 4))),
            "technologies": join_list(rng, rng.sample(TECH, rng.randint(1, 5))),
            "employees_count": str(employees),
            "annual_revenue": str(revenue),
            "total_funding": str(funding) if funding else "",
            "founded_year": str(rng.randint(1950, 2023)),
            "country": country,
            "state": state,
            "city": city,
            "phone": phone(rng, prefix),
            "linkedin_url": f"https://www.linkedin.com/company/{slug(base)}",
            "_domain": domain,
        })
    return rows


def contacts(rng, companies):
    rows = []
    emails = set()
    while len(rows) < CONTACTS:
        company = rng.choice(companies)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        pattern = rng.choice(["{f}.{l}", "{f}{l}", "{fi}{l}", "{f}"])
        local = pattern.format(f=slug(first), l=slug(last), fi=slug(first)[:1])
        email = f"{local}@{company['_domain']}"
        if email in emails:
            email = f"{slug(first)}.{slug(last)}{rng.randint(2, 99)}@{company['_domain']}"
            if email in emails:
                continue
        emails.add(email)
        title, seniority, departments = rng.choice(TITLES)
        city, state, country = company["city"], company["state"], company["country"]
        if rng.random() < 0.15:  # remote: lives elsewhere
            city, state, country, _, _ = rng.choice(PLACES)
        prefix = next(p[3] for p in PLACES if p[0] == city)
        rows.append({
            "first_name": first,
            "last_name": last,
            "email": email,
            "title": title,
            "seniority": seniority,
            "departments": join_list(rng, departments),
            "phone": phone(rng, prefix) if rng.random() < 0.7 else "",
            "linkedin_url": f"https://www.linkedin.com/in/{slug(first)}-{slug(last)}-{rng.randint(1000, 99999)}",
            "email_status": rng.choice(["verified", "verified", "verified", "unverified", "bounced"]),
            "country": country,
            "state": state,
            "city": city,
            "company_name": company["name"],
            "company_website": company["website"],
            "company_industries": company["industries"],
            "company_employees_count": company["employees_count"],
        })
    return rows


def to_csv(header, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def bad_lines(rng, contact_rows):
    """Ten good contacts, then three rows the importer rejects: the wrong
    number of fields, a count that is not a number, and a row with nothing
    that identifies the contact (no email, no name)."""
    good = contact_rows[:10]
    text = to_csv(CONTACT_HEADER, good)
    bad = [
        # line 12: 3 fields where the header has 16
        "Ada,Lovelace,ada@analytical.example\n",
        # line 13: company_employees_count is not a whole number
        "Grace,Hopper,grace@cobol.example,Rear Admiral,c_suite,Engineering,,,verified,USA,VA,Arlington,"
        "Navy Labs,https://navylabs.example,Defense,lots\n",
        # line 14: no email, no first or last name
        ",,,Ghost Writer,entry,Marketing,,,unverified,USA,NY,New York,,,,\n",
    ]
    return text + "".join(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "examples"))
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    rng = random.Random(SEED)
    comp = companies(rng)
    cont = contacts(rng, comp)
    files = {
        "companies.csv": to_csv(COMPANY_HEADER, comp),
        "contacts.csv": to_csv(CONTACT_HEADER, cont),
        "bad_lines.csv": bad_lines(rng, cont),
    }
    os.makedirs(args.out, exist_ok=True)
    stale = []
    for name, text in files.items():
        path = os.path.join(args.out, name)
        if args.check:
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"wrote {path}: {text.count(chr(10)) - 1} rows")
    if stale:
        print(f"out of date: {', '.join(stale)}; run scripts/gen_sample.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
