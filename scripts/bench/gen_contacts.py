#!/usr/bin/env python3
"""Writes N deterministic contact rows as CSV to stdout (about 200 bytes a row).

Usage: gen_contacts.py N
"""
import csv
import random
import sys

n = int(sys.argv[1])
rng = random.Random(42)
countries = ["USA", "Germany", "France", "India", "Brazil", "Japan", "Canada", "Spain"]
states = ["CA", "NY", "TX", "BE", "BY", "IDF", "MH", "SP", "ON", "MD"]
cities = ["San Francisco", "New York", "Austin", "Berlin", "Munich", "Paris", "Mumbai", "São Paulo", "Toronto", "Madrid"]
titles = ["Software Engineer", "VP Sales", "Chief Technology Officer", "Marketing Manager", "Data Scientist", "Account Executive"]
seniorities = ["entry", "senior", "manager", "director", "vp", "c_suite"]
departments = ["Engineering", "Sales", "Marketing", "Finance", "Operations", "Legal"]
first = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "João"]
last = ["Lee", "Smith", "Müller", "Ivanov", "Garcia", "Khan", "Tanaka", "Rossi", "Silva", "Novak"]

w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["email", "first_name", "last_name", "title", "seniority", "departments", "phone",
            "linkedin_url", "email_status", "country", "state", "city"])
for i in range(n):
    f, l = rng.choice(first), rng.choice(last)
    w.writerow([
        f"{f.lower()}.{l.lower()}.{i}@example{i % 997}.com", f, l, rng.choice(titles),
        rng.choice(seniorities), ";".join(rng.sample(departments, rng.randint(1, 2))),
        f"+1-555-{i % 10000:04d}-{i % 997:03d}", f"https://www.linkedin.com/in/{f.lower()}-{l.lower()}-{i}",
        rng.choice(["verified", "unverified"]), rng.choice(countries), rng.choice(states), rng.choice(cities),
    ])
