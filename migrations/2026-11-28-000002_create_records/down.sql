DROP TABLE filters_data;
DROP TABLE contacts;
DROP TABLE companies;
