DROP TABLE job_rejections;
